import sys

from tofu.cli import main

sys.exit(main())
