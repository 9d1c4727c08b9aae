from sessionexport.cli import main

main()
