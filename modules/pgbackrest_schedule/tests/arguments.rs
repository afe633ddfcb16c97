//! Arbitrary JSON fed to the argument validation (the protocol's spec, the `Args` struct, then
//! the module's own checks of each unit and file entry): refused or accepted, never a panic.

use ansible_module::{testing, Module};
use proptest::prelude::*;

type M = pgbackrest_schedule::PgbackrestSchedule;

proptest! {
    // Modest: the whole property run stays well under a second.
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_arguments_are_refused_or_accepted_never_a_panic(
        raw in testing::arguments(&M::spec())
    ) {
        if let Ok(args) = testing::validated::<M>(&raw) {
            for present in [true, false] {
                let _ = pgbackrest_schedule::wanted::units(
                    args.units.as_deref().unwrap_or_default(), present);
                let _ = pgbackrest_schedule::wanted::files(
                    args.files.as_deref().unwrap_or_default(), present);
            }
            let _ = pgbackrest_schedule::wanted::directories(
                args.directories.as_deref().unwrap_or_default());
        }
    }

    #[test]
    fn arbitrary_entries_are_refused_or_accepted_never_a_panic(
        entries in prop::collection::vec(testing::json(), 0..4)
    ) {
        for present in [true, false] {
            let _ = pgbackrest_schedule::wanted::units(&entries, present);
            let _ = pgbackrest_schedule::wanted::files(&entries, present);
        }
        let _ = pgbackrest_schedule::wanted::directories(&entries);
    }
}
