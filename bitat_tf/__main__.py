import sys

from bitat_tf.cli import main

sys.exit(main())
