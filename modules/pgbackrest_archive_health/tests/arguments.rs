//! Arbitrary JSON fed to the argument validation (the protocol's spec, the `Args` struct, then
//! the module's own checks that need no system): each input is refused or accepted, never a panic.

use ansible_module::{testing, Module};
use proptest::prelude::*;

type M = pgbackrest_archive_health::PgbackrestArchiveHealth;

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
            let _ = pgbackrest::StanzaName::parse(&args.stanza);
        }
    }
}
