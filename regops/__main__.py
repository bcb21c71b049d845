from regops.cli import run

run()
