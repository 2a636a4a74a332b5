"""`GET /`: the zoo page (service/frontend/static/: plain HTML, JavaScript and CSS, no build step and nothing
fetched from elsewhere, so it works offline). It lists the models from /v1/models and sends the photo to
/v1/compare; the bundled sample photos are under /static/samples/."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parents[1] / "static"

router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
