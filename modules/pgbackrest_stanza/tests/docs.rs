//! The sidecar doc an operator reads and the spec the module enforces say the same thing.

use ansible_module::Module as _;

#[test]
fn sidecar_doc_options_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_stanza",
        &pgbackrest_stanza::PgbackrestStanza::spec(),
    );
}
