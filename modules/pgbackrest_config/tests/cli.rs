//! The compiled module's integration tests: its sidecar doc says what its spec enforces.

use ansible_module::Module as _;

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_config",
        &pgbackrest_config::PgbackrestConfig::spec(),
    );
}
