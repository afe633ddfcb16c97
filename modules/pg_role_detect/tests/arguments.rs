//! Arbitrary JSON fed to the argument validation (the protocol's spec, the `Args` struct, then
//! the module's own checks that need no system): each input is refused or accepted, never a panic.

#[test]
fn arbitrary_arguments_are_refused_or_accepted_never_a_panic() {
    ansible_module::testing::arguments_never_panic::<pg_role_detect::PgRoleDetect>(|args| {
        let _ = postgres_access::Login::new(&args.login, None);
    });
}
