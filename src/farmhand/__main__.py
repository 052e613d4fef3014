from farmhand.cli.app import main

main()
