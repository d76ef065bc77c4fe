from .cli import notifd_main

notifd_main()
