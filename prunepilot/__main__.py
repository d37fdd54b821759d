from prunepilot.cli import main

main()
