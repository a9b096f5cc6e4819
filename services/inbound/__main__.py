from services.inbound.app import main

main()
