//! The `pgbackrest_archive_health` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pgbackrest_archive_health::PgbackrestArchiveHealth>()
}
