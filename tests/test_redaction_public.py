"""Which ``${VAR}`` values records show: plain names are shown (a URL keeps its host), secret-looking
names, verification secrets, connection secrets and values with embedded credentials stay masked (I9)."""

from __future__ import annotations

from engine.redaction import public_names, redact


def test_plain_names_are_shown_and_secret_looking_ones_masked() -> None:
    secrets = {"CRM_URL": "https://crm.example:8443", "CRM_TOKEN": "tok-123456", "API_KEY": "k-987654",
               "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/XYZ", "REGION": "eu-west-1",
               "DB_PASSWORD": "hunter22", "AUTH_HEADER": "Basic abc", "connection:crm": "oauth-access-9",
               "step:$.token": "resp-token-1", "USERINFO_URL": "https://u:p4ss@api.example",
               "QUERY_URL": "https://api.example/?apikey=zz99", "STRIPE_WHSEC": "whsec_1", "LEDGER": "ledger-1"}
    public = public_names(secrets, masked={"LEDGER"})
    assert public == {"CRM_URL", "REGION"}
    text = redact("POST https://crm.example:8443/contacts?t=tok-123456 eu-west-1 oauth-access-9 ledger-1",
                  secrets, public)
    assert text == "POST https://crm.example:8443/contacts?t=${CRM_TOKEN} eu-west-1 ${connection:crm} ${LEDGER}"


def test_without_public_names_every_value_is_masked() -> None:
    assert redact({"url": "https://crm.example/x"}, {"CRM_URL": "https://crm.example"}) == {"url": "${CRM_URL}/x"}
