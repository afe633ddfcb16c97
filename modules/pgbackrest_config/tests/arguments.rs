//! Arbitrary JSON fed to the argument validation (the protocol's spec, the `Args` struct, then
//! the module's own checks that need no system): each input is refused or accepted, never a panic.

#[test]
fn arbitrary_arguments_are_refused_or_accepted_never_a_panic() {
    ansible_module::testing::arguments_never_panic::<pgbackrest_config::PgbackrestConfig>(|args| {
        let mut ctx = ansible_module::Context::default();
        pgbackrest_config::validate::register_secrets(&args, &mut ctx);
        let _ = pgbackrest_config::validate::check_vars(&args);
        let _ = pgbackrest_config::validate::has_secrets(&args);
        let release = pgbackrest_config::validate::Release::new(
            pgbackrest::releases::base(),
            pgbackrest_config::validate::Source::Default,
        );
        let _ = pgbackrest_config::validate::sections(&args, &release, &mut ctx);
    });
}
