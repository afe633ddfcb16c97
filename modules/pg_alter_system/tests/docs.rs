//! The sidecar doc an operator reads and the spec the module enforces say the same thing.

use ansible_module::Module as _;

#[test]
fn sidecar_doc_options_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pg_alter_system",
        &pg_alter_system::PgAlterSystem::spec(),
    );
}

#[test]
fn examples_show_the_pgbackrest_archiving_settings() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../collection/plugins/modules/pg_alter_system.yml"
    );
    let doc: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let examples: serde_json::Value =
        serde_yaml::from_str(doc["EXAMPLES"].as_str().unwrap()).unwrap();
    let settings = examples
        .as_array()
        .unwrap()
        .iter()
        .find_map(|task| task["veza.pgbackrest.pg_alter_system"]["settings"].as_object())
        .unwrap();
    assert_eq!(settings["archive_mode"], "on");
    assert_eq!(
        settings["archive_command"],
        "pgbackrest --stanza=main archive-push %p"
    );
    assert_eq!(settings["archive_timeout"], 60);
}
