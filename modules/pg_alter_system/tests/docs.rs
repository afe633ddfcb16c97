//! The sidecar doc an operator reads and the spec the module enforces say the same thing.

use ansible_module::Module as _;
use pg_alter_system::PgAlterSystem;

fn sidecar() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../collection/plugins/modules/pg_alter_system.yml"
    );
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sidecar_doc_options_match_the_spec() {
    let doc = sidecar();
    assert_eq!(doc["DOCUMENTATION"]["module"], "pg_alter_system");
    assert_eq!(
        ansible_module::spec::describe_doc(&doc["DOCUMENTATION"]["options"]),
        ansible_module::spec::describe(&PgAlterSystem::spec())
    );
}

#[test]
fn examples_show_the_pgbackrest_archiving_settings() {
    let doc = sidecar();
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
