from services.sink.app import main

main()
