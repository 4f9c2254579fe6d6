from django.db import migrations

# Append-only at the database, not only in Python: any UPDATE or DELETE on the audit tables
# raises, whoever issues it. TRUNCATE is left to privileges (revoke it from the application role
# in production): the test framework empties tables with TRUNCATE between transactional tests.
# audit_verify and the signed digests catch what a superuser does with the trigger disabled.
FORBID = """
CREATE OR REPLACE FUNCTION switchboard_audit_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit tables are append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

TABLES = ["controlplane_auditevent", "controlplane_auditdigest"]


def _triggers(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION switchboard_audit_forbid_change();
"""


def _drop(table: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table};
"""


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0003_initial")]

    operations = [
        migrations.RunSQL(FORBID, "DROP FUNCTION IF EXISTS switchboard_audit_forbid_change() CASCADE;"),
        *[migrations.RunSQL(_triggers(t), _drop(t)) for t in TABLES],
    ]
