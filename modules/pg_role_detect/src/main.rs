//! The `pg_role_detect` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pg_role_detect::PgRoleDetect>()
}
