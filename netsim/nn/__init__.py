"""Torch modules. Importing this package registers every model in ``netsim.nn.registry``."""

from netsim.nn.registry import UnknownModelError, build_model, register_model, registered_models
from netsim.nn.deepjscc import DeepJSCC, DeepJSCCMultiHop
from netsim.nn.dhd import DHD
from netsim.nn.zoo import CheckpointError, ModelNotFound, list_models, load_model, save_model

__all__ = [
    "UnknownModelError", "build_model", "register_model", "registered_models",
    "DeepJSCC", "DeepJSCCMultiHop", "DHD",
    "CheckpointError", "ModelNotFound", "list_models", "load_model", "save_model",
]
