//! Arbitrary JSON fed to the argument validation (the protocol's spec, the `Args` struct, then
//! the module's own checks of each unit, file and directory entry): refused or accepted, never a
//! panic.

use pgbackrest_schedule::wanted;

#[test]
fn arbitrary_arguments_are_refused_or_accepted_never_a_panic() {
    ansible_module::testing::arguments_never_panic::<pgbackrest_schedule::PgbackrestSchedule>(
        |args| {
            for present in [true, false] {
                let _ = wanted::units(args.units.as_deref().unwrap_or_default(), present);
                let _ = wanted::files(args.files.as_deref().unwrap_or_default(), present);
            }
            let _ = wanted::directories(args.directories.as_deref().unwrap_or_default());
        },
    );
}
