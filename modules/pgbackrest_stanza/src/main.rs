//! The `pgbackrest_stanza` Ansible module binary; everything lives in the library.

fn main() {
    ansible_module::run::<pgbackrest_stanza::PgbackrestStanza>()
}
