"""The blueprint the intake, the pull API and the OpenAPI document are registered on."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__)
