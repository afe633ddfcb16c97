//! The `dr_drill` Ansible module binary (and the weekly drill program); everything lives in the
//! library.

fn main() {
    ansible_module::run::<dr_drill::DrDrill>()
}
