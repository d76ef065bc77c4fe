"""The item types notifd ships with, written against the public plugin API only."""
