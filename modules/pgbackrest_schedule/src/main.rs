//! The `pgbackrest_schedule` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pgbackrest_schedule::PgbackrestSchedule>()
}
