//! The `pg_alter_system` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pg_alter_system::PgAlterSystem>()
}
