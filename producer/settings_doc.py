"""The configuration table of the README, generated from :class:`Settings`.

``python -m producer.settings_doc README.md`` rewrites the table between its markers; a test
fails when the README and the settings disagree.
"""

import sys
from enum import Enum
from pathlib import Path

from producer.settings import Settings

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"

#: Settings that also have a global CLI flag (see ``producer/cli/context.py``).
FLAGS = {
    "kafka_bootstrap_servers": "--bootstrap-servers",
    "redis_url": "--redis-url",
    "mlflow_tracking_uri": "--mlflow-tracking-uri",
    "topic_prefix": "--topic-prefix",
    "kafka_security_protocol": "--security-protocol",
    "kafka_sasl_mechanism": "--sasl-mechanism",
    "kafka_sasl_username": "--sasl-username",
    "kafka_sasl_password": "--sasl-password-file",
    "kafka_ssl_cafile": "--ssl-cafile",
    "kafka_ssl_certfile": "--ssl-certfile",
    "kafka_ssl_keyfile": "--ssl-keyfile",
    "kafka_enable_idempotence": "--[no-]idempotence",
    "secrets_dir": "--secrets-dir",
}


def settings_table() -> str:
    rows = ["| variable | default | flag | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Enum):
            default = default.value
        shown = "" if default is None else f"`{default}`"
        flag = f"`{FLAGS[name]}`" if name in FLAGS else ""
        rows.append(f"| `CLICKTUNE_{name.upper()}` | {shown} | {flag} | {field.description} |")
    return "\n".join(rows)


def with_table(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
