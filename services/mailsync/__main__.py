from services.mailsync.app import main

main()
