from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector is created first so any later app can declare vector columns."""

    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [VectorExtension()]
