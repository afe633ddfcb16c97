"""A stand-in for pip's get-pip.py, which ansible-test downloads from a host these machines
cannot reach: pip from the interpreter's own ensurepip, then upgraded to the requested pip from
PyPI (the arguments are get-pip.py's: pip install options and packages, plus its own flags)."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
