from qbayes.cli import main

main()
