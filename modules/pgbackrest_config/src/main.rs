//! The `pgbackrest_config` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pgbackrest_config::PgbackrestConfig>()
}
