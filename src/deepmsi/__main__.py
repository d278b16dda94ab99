import sys

from deepmsi.cli import main

sys.exit(main())
