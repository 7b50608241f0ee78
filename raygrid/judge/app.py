"""The judging page: a FastAPI app over a `CropSet` and a `JudgementStore`.

    GET  /                          the page (package data; no network needed: no CDN)
    GET  /api/config                experiment, default judge name, target per judge
    GET  /api/next?judge=NAME       the next comparison (`sampling.next_comparison`) + progress
    POST /api/judgements            store one judgement (idempotent by its id)
    GET  /img/hr/{crop}.png         reference HR crop
    GET  /img/sr/{run}/{crop}.png   SR crop of a run

The server, not the page, fills in what a judgement's runs are (their settings, steps and the
crops' source), so a page cannot store a judgement of a run or crop that does not exist.
Endpoints are plain functions: FastAPI runs them in its thread pool, and each store call opens
its own SQLite connection.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from raygrid.judge.sampling import next_comparison
from raygrid.judge.source import CropSet
from raygrid.judge.store import ConflictError, JudgementStore

DEFAULT_TARGET = 40


class JudgementIn(BaseModel):
    """What the page posts; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9-]+$")
    judge: str = Field(min_length=1, max_length=80)
    sitting: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=1)
    crop_id: str
    left_run: str
    right_run: str
    choice: Literal["left", "right", "same"]
    elapsed_ms: int = Field(ge=0)
    repeat_of: str | None = None


def _page(name: str) -> str:
    return resources.files("raygrid.judge").joinpath("static", name).read_text(encoding="utf-8")


def create_app(crop_set: CropSet, store: JudgementStore, *, default_judge: str | None = None,
               target: int = DEFAULT_TARGET) -> FastAPI:
    app = FastAPI(title="raygrid judge", docs_url=None, redoc_url=None, openapi_url=None)
    experiment = crop_set.experiment
    items = crop_set.items()
    run_crops = crop_set.run_crops()
    html = _page("judge.html").replace("/*JUDGE_CSS*/", _page("judge.css")).replace("/*JUDGE_JS*/", _page("judge.js"))

    def progress(judge: str) -> dict:
        return {"mine": store.count(experiment, judge), "total": store.count(experiment), "target": target}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico")
    def favicon() -> Response:  # browsers ask for one; a 404 would be a console error
        return Response(status_code=204)

    @app.get("/api/config")
    def config() -> dict:
        return {"experiment": experiment, "judge": default_judge or "", "target": target,
                "settings": len(items), "runs": sum(len(v) for v in items.values()), "crops": len(crop_set.crops)}

    @app.get("/api/next")
    def next_pair(judge: str) -> dict:
        judge = judge.strip()
        if not judge:
            raise HTTPException(422, "judge name is empty")
        try:
            proposal = next_comparison(store.frame(experiment=experiment), judge, items, run_crops)
        except ValueError as e:  # e.g. no two settings share a crop
            raise HTTPException(409, str(e)) from None
        return {
            "crop_id": proposal.crop_id, "left_run": proposal.left_run, "right_run": proposal.right_run,
            "repeat_of": proposal.repeat_of, "reason": proposal.reason,
            "reference_url": f"/img/hr/{proposal.crop_id}.png",
            "left_url": f"/img/sr/{proposal.left_run}/{proposal.crop_id}.png",
            "right_url": f"/img/sr/{proposal.right_run}/{proposal.crop_id}.png",
            "progress": progress(judge),
        }

    @app.post("/api/judgements")
    def add(j: JudgementIn) -> dict:
        runs = crop_set.runs
        for side in ("left_run", "right_run"):
            run = getattr(j, side)
            if run not in crop_set.sr or j.crop_id not in crop_set.sr[run]:
                raise HTTPException(422, f"{side} {run!r} has no SR crop {j.crop_id!r} in this experiment")
        if runs[j.left_run].item == runs[j.right_run].item:
            raise HTTPException(422, "left and right runs are the same setting")
        record = j.model_dump()
        record.update(experiment=experiment, judge=j.judge.strip(),
                      left_item=runs[j.left_run].item, right_item=runs[j.right_run].item,
                      left_step=crop_set.sr[j.left_run][j.crop_id][1], right_step=crop_set.sr[j.right_run][j.crop_id][1],
                      source=crop_set.sources[j.left_run] if crop_set.sources[j.left_run] == crop_set.sources[j.right_run]
                      else f"{crop_set.sources[j.left_run]}/{crop_set.sources[j.right_run]}")
        try:
            new = store.add(record)
        except ConflictError as e:
            raise HTTPException(409, str(e)) from None
        return {"stored": new, "duplicate": not new, "progress": progress(record["judge"])}

    @app.get("/img/hr/{crop_id}.png")
    def hr(crop_id: str) -> Response:
        if crop_id not in {c.id for c in crop_set.crops}:
            raise HTTPException(404, f"no crop {crop_id!r}")
        return FileResponse(crop_set.hr_path(crop_id), media_type="image/png")

    @app.get("/img/sr/{run_id}/{crop_id}.png")
    def sr(run_id: str, crop_id: str) -> Response:
        entry = crop_set.sr.get(run_id, {}).get(crop_id)
        if entry is None:
            raise HTTPException(404, f"no SR crop {crop_id!r} of run {run_id!r}")
        return FileResponse(entry[0], media_type="image/png")

    return app
