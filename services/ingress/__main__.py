from services.ingress.app import main

main()
