import sys

from hitlseg.cli import main

sys.exit(main())
