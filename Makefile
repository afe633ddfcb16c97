# Entry points; the scripts do the work and each installs what it needs (scripts/setup).
.PHONY: demo test collection bench setup clean

demo:        ## the main job on the embedded default: the lab of real hosts + the playbook
	scripts/demo

test:        ## every test (what CI runs)
	scripts/test

collection:  ## build/veza-pgbackrest-<version>.tar.gz
	scripts/setup
	scripts/build-collection

bench:       ## speed and size measurements (not tests)
	scripts/setup
	scripts/bench

setup:
	scripts/setup

clean:
	rm -rf build target
