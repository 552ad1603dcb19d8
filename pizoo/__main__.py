from pizoo.cli import main

main()
