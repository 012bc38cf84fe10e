from monitoring.cli import monitoring

monitoring()
