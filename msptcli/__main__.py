from msptcli.cli import main

main()
