from mas.cli import app

app()
