"""Write the documentation-only Python stub for a binary module from its sidecar YAML.

`ansible-doc -l` lists a module by a text file it can read; the module itself is a binary (see
scripts/build-collection). The stub carries the same DOCUMENTATION, EXAMPLES and RETURN as the
sidecar and is never executed: Ansible runs the extension-less file, which wins over NAME.py.
"""
import sys

import yaml

sidecar = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
name = sidecar["DOCUMENTATION"]["module"]
# The sidecar's leading comment lines (copyright and licence, which ansible-test's validate-modules
# looks for in a module's first lines) come first here too.
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        if not line.startswith("#"):
            break
        print(line, end="")
print(f"# Documentation only: the module {name} is the binary beside this file (Rust).")
print(f"# Generated from {name}.yml by scripts/doc-stub.py; do not edit.")
for key in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
    value = sidecar[key]
    text = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False, width=100)
    assert "'''" not in text, f"{key} of {name} contains ''' and cannot be quoted"
    print(f"\n{key} = r'''\n{text}'''")
