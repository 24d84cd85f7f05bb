"""One default per setting (issue 20.4): the selection policy and the adaptive decoder are the same in
every command's --help, the Python API and the web app."""

from __future__ import annotations

import inspect

import pytest

from hitlseg.cli import build_parser
from hitlseg.defaults import DECODER_CHOICES, DEFAULT_DECODER, DEFAULT_POLICY, GTFREE_POLICIES


def _subparser(parser, *names):
    for name in names:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command,option,default,choices", [
    (("select",), "--policy", DEFAULT_POLICY, GTFREE_POLICIES),
    (("experiment", "selection"), "--policy", DEFAULT_POLICY, GTFREE_POLICIES),
    (("experiment", "selection"), "--decoder", DEFAULT_DECODER, DECODER_CHOICES),
    (("flim", "fit"), "--decoder", DEFAULT_DECODER, DECODER_CHOICES),
])
def test_every_help_shows_the_one_default(command, option, default, choices):
    parser = _subparser(build_parser(), *command)
    action = next(a for a in parser._actions if option in a.option_strings)
    assert action.default == default and tuple(action.choices) == tuple(choices)
    assert f"default {default}" in " ".join(parser.format_help().split())


def test_the_api_and_the_web_app_use_the_same_defaults():
    from hitlseg.experiments import ProtocolConfig
    from hitlseg.flim import FLIMModel
    from hitlseg.robot import Robot
    from hitlseg.selection import GTFreeSelector
    from hitlseg.server.routers.models import TrainRequest
    from hitlseg.server.training import ModelService

    assert inspect.signature(GTFreeSelector).parameters["policy"].default == DEFAULT_POLICY
    assert Robot().policy == DEFAULT_POLICY and ProtocolConfig().policy == DEFAULT_POLICY
    assert inspect.signature(FLIMModel.fit).parameters["decoder"].default == DEFAULT_DECODER
    assert ProtocolConfig().decoder == DEFAULT_DECODER
    assert TrainRequest.model_fields["decoder"].default == DEFAULT_DECODER
    assert inspect.signature(ModelService.train).parameters["decoder"].default == DEFAULT_DECODER


def test_the_web_form_preselects_the_default_decoder():
    from pathlib import Path

    import hitlseg.server as server

    html = (Path(server.__file__).parent / "static" / "index.html").read_text()
    select = html[html.index('<select id="train-decoder">'):]
    assert select.split("<option>")[1].startswith(DEFAULT_DECODER)
