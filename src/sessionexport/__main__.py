import sys

try:
    from sessionexport.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load (a moment): a quiet exit, as later on
    sys.exit(130)

main()
