"""Training: losses (``netsim.train.losses``), datasets, loops, checkpoint writing."""

from netsim.train.losses import (JSCC_LOSSES, bce_q_loss, dhd_loss, freeze, hash_proxy_loss,
                                 jscc_dhd_loss, jscc_loss, sdh_loss)

__all__ = ["JSCC_LOSSES", "bce_q_loss", "dhd_loss", "freeze", "hash_proxy_loss", "jscc_dhd_loss",
           "jscc_loss", "sdh_loss"]
