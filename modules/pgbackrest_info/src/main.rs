//! The `pgbackrest_info` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pgbackrest_info::PgbackrestInfo>()
}
