"""The API's blueprints, one module each; `BLUEPRINTS` is the order they are registered in."""

from webapp.api.health import blp as health
from webapp.api.tasks import blp as tasks

BLUEPRINTS = (health, tasks)
