from devstack.sink.app import main

main()
