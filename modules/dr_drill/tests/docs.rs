//! The sidecar doc an operator reads and the spec the module enforces say the same thing.

use ansible_module::Module as _;
use dr_drill::DrDrill;

#[test]
fn sidecar_doc_options_match_the_spec() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../collection/plugins/modules/dr_drill.yml"
    );
    let doc: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(doc["DOCUMENTATION"]["module"], "dr_drill");
    assert_eq!(
        ansible_module::spec::describe_doc(&doc["DOCUMENTATION"]["options"]),
        ansible_module::spec::describe(&DrDrill::spec())
    );
}
