"""Zero-shot heads for every level of every tree, on top of an open_clip model.

:class:`ZeroShotClassifier` makes CLIP attackable (STYLE.md, "make CLIP attackable"): it owns the
model's pixel normalisation, the image encoder and the text embeddings of every node of the
forest, and maps [0, 1] images to the logits of all levels of all trees with one matmul (or one
pairwise distance computation) against all nodes at once. Attacks and evaluators then see a plain
``images -> logits`` module.

Two heads (:class:`~trainables.head.HeadSettings`):

- ``euclidean``: logits = logit scale x cosine(image, node prompt). Plain CLIP and the flat
  baselines (TeCoA, PMG-AFT, FARE) use it with the text side frozen.
- ``hyperbolic``: image and text embeddings are mapped into the Poincare ball,
  ``phi(x) = xi(exp0(a_img f(x)))`` and ``psi(v) = xi(exp0(a_txt P h_v))``, and logits are
  ``-d_r(phi, psi) / temperature`` (METHOD.md). ``h_v`` is the frozen text transformer's pooled
  output for node ``v`` (template-ensembled) and ``P`` the text projection, trainable for the
  method.

Logit layout: the leaves come first (level 0 is shared by every tree of a forest), then each
tree's levels 1..L in forest order. :class:`~trainables.head.HeadLayout` maps ``(tree, level)``
to its slice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from trainables import geometry
from trainables.backbone import LoadedClip
from trainables.errors import must
from trainables.head import HeadLayout, HeadOutput, HeadSettings

#: The standard CLIP zero-shot prompt; the embedded base model is pretrained with it.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
#: Clamp range of a learned curvature: far from flat (r -> 0) and from a degenerate tiny ball.
CURVATURE_RANGE = (0.1, 10.0)
#: Clamp of learned log scales: embeddings neither vanish nor jump to the boundary.
LOG_SCALE_RANGE = (math.log(1e-4), math.log(1e4))


def _projection_owner(clip: nn.Module) -> nn.Module | None:
    """The module holding ``text_projection``: the CLIP itself, or its custom text tower."""
    for owner in (clip, getattr(clip, "text", None)):
        if owner is not None and getattr(owner, "text_projection", None) is not None:
            return owner
    return None


@contextmanager
def _without_text_projection(owner: nn.Module) -> Iterator[None]:
    """Let ``encode_text`` return the pooled transformer output ``h`` (before ``P``)."""
    projection = owner.text_projection
    owner.text_projection = None
    try:
        yield
    finally:
        owner.text_projection = projection


class ZeroShotClassifier(nn.Module):
    """[0, 1] images -> logits for every node of every tree, in one matmul or distance call.

    Args:
        loaded: the CLIP model with its tokenizer and normalisation
            (:func:`trainables.clip_loader.load_clip`).
        forest: the class trees; level 0 are the dataset's classes in label order.
        templates: prompt templates, ensembled per node.
        head: euclidean or hyperbolic head, see :class:`HeadSettings`.

    The text transformer is never trained, so its output is computed once at construction and
    cached as a buffer: the normalised prototypes (euclidean head; mean of normalised template
    embeddings, renormalised) or the template-mean pooled outputs ``h_v`` (hyperbolic head, where
    the projection ``P`` and the scales may be trained and are applied per forward, cheaply).
    Call :meth:`refresh_text` after changing the text tower.
    """

    def __init__(
        self,
        loaded: LoadedClip,
        forest,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        head: HeadSettings | None = None,
    ):
        super().__init__()
        if not templates or any("{}" not in template for template in templates):
            raise must("templates", "a non-empty list of strings with a {} placeholder", templates)
        self.clip = loaded.model
        self.tokenizer = loaded.tokenizer
        self.image_size = loaded.image_size  # the side of the square images it takes
        self.templates = tuple(templates)
        self.forest = forest
        self.head = head or HeadSettings()
        self.layout = HeadLayout.from_forest(forest)
        self._projection_owner = _projection_owner(self.clip)
        if self.head.hyperbolic and self._projection_owner is None:
            raise must(
                "head.geometry",
                "'euclidean' for a model without a text projection",
                self.head.geometry,
            )
        self.register_buffer("pixel_mean", torch.tensor(loaded.mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(loaded.std).view(1, 3, 1, 1))
        self.register_buffer("prototypes", torch.empty(0))  # euclidean: [N, D] unit vectors
        self.register_buffer("text_hidden", torch.empty(0))  # hyperbolic: [N, W] pooled h_v
        self.refresh_text()
        if self.head.hyperbolic:
            self._init_hyperbolic_parameters()
        # Mirror the wrapped model's mode: wrapping must not switch batch-norm statistics on.
        self.train(self.clip.training)

    def with_forest(self, forest, *, templates: Sequence[str] | None = None) -> ZeroShotClassifier:
        """A classifier over another forest that shares this one's model and head parameters.

        Fine-tuning aligns a selection of trees (maybe cut); evaluation scores every tree of the
        dataset with the same weights, scales and curvature, and a zero-shot dataset's classes
        with its own ``templates`` (default: this classifier's).
        """
        if templates is not None and (
            not templates or any("{}" not in template for template in templates)
        ):
            raise must("templates", "a non-empty list of strings with a {} placeholder", templates)
        twin = ZeroShotClassifier.__new__(ZeroShotClassifier)
        nn.Module.__init__(twin)
        twin.clip, twin.tokenizer = self.clip, self.tokenizer
        twin.image_size = self.image_size
        twin.templates = tuple(templates) if templates is not None else self.templates
        twin.forest, twin.head = forest, self.head
        twin.layout = HeadLayout.from_forest(forest)
        twin._projection_owner = self._projection_owner
        twin.register_buffer("pixel_mean", self.pixel_mean)
        twin.register_buffer("pixel_std", self.pixel_std)
        twin.register_buffer("prototypes", torch.empty(0, device=self.pixel_mean.device))
        twin.register_buffer("text_hidden", torch.empty(0, device=self.pixel_mean.device))
        if self.head.hyperbolic:
            twin.log_curvature = self.log_curvature
            twin.log_text_scale = self.log_text_scale
            twin.log_image_scale = self.log_image_scale
        twin.refresh_text()
        twin.train(self.training)
        return twin

    # -- text side -------------------------------------------------------------------------

    def _tokens(self, names: Sequence[str]) -> torch.Tensor:
        prompts = [template.format(name) for name in names for template in self.templates]
        return self.tokenizer(prompts).to(self.pixel_mean.device)

    def encode_prompts(self, names: Sequence[str]) -> torch.Tensor:
        """Normalised template-ensembled text embeddings [len(names), D] (the cosine prototypes)."""
        features = F.normalize(self.clip.encode_text(self._tokens(names)), dim=-1)
        features = features.view(len(names), len(self.templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def encode_hidden(self, names: Sequence[str]) -> torch.Tensor:
        """Template-mean pooled text transformer outputs ``h_v`` [len(names), W], before ``P``."""
        with _without_text_projection(self._projection_owner):
            hidden = self.clip.encode_text(self._tokens(names))
        return hidden.view(len(names), len(self.templates), -1).mean(dim=1)

    @torch.no_grad()
    def refresh_text(self) -> None:
        """Recompute the cached text transformer outputs of every node."""
        if self.head.hyperbolic:
            self.text_hidden = self.encode_hidden(self.layout.names).float()
        else:
            self.prototypes = self.encode_prompts(self.layout.names)

    # Kept for callers of the euclidean head.
    refresh_prototypes = refresh_text

    def project_text(self, hidden: torch.Tensor) -> torch.Tensor:
        """Apply the model's text projection ``P`` to pooled outputs ``h``."""
        projection = self._projection_owner.text_projection
        if isinstance(projection, nn.Module):
            return projection(hidden)
        return hidden @ projection

    # -- hyperbolic parameters -------------------------------------------------------------

    @torch.no_grad()
    def _init_hyperbolic_parameters(self) -> None:
        head = self.head
        text_norm = self.project_text(self.text_hidden).norm(dim=-1).mean().clamp_min(1e-6)
        log_text_scale = math.log(head.init_norm) - math.log(float(text_norm))
        self.log_curvature = nn.Parameter(
            torch.tensor(math.log(head.curvature)), requires_grad=head.learn_curvature
        )
        self.log_text_scale = nn.Parameter(
            torch.tensor(log_text_scale), requires_grad=head.learn_scales
        )
        # Until calibrated on images, assume image features are as long as text features.
        self.log_image_scale = nn.Parameter(
            torch.tensor(log_text_scale), requires_grad=head.learn_scales
        )

    @torch.no_grad()
    def calibrate_image_scale(self, images: torch.Tensor) -> None:
        """Set the image scale so that these images' mean tangent norm is ``head.init_norm``.

        Deterministic given the images; call it once before fine-tuning with a fixed batch.
        """
        if not self.head.hyperbolic:
            return
        norm = self.encode_images(images).float().norm(dim=-1).mean().clamp_min(1e-6)
        self.log_image_scale.fill_(math.log(self.head.init_norm) - math.log(float(norm)))

    @property
    def curvature(self) -> torch.Tensor | None:
        if not self.head.hyperbolic:
            return None
        if not self.head.learn_curvature:
            return self.log_curvature.exp()
        low, high = CURVATURE_RANGE
        return self.log_curvature.clamp(math.log(low), math.log(high)).exp()

    def _scale(self, log_scale: torch.Tensor) -> torch.Tensor:
        return log_scale.clamp(*LOG_SCALE_RANGE).exp()

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=100.0)

    # -- embeddings and logits -------------------------------------------------------------

    @property
    def text_delta_shape(self) -> tuple[int, int]:
        """Shape of a text perturbation: one vector per node, in the space it is added to."""
        if self.head.hyperbolic:
            return (self.layout.num_nodes, self.project_text(self.text_hidden[:1]).shape[-1])
        return tuple(self.prototypes.shape)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings [B, D] of [0, 1] images [B, 3, H, W]."""
        return self.clip.encode_image((images - self.pixel_mean) / self.pixel_std)

    def text_embeddings(self, text_delta: torch.Tensor | None = None) -> torch.Tensor:
        """[N, D] node embeddings in head space; ``text_delta`` is added before the map.

        Euclidean: the delta is added to the unit prototypes, which are renormalised.
        Hyperbolic: the delta is added to the tangent vector ``a_txt P h`` before exp0.
        """
        if not self.head.hyperbolic:
            if text_delta is None:
                return self.prototypes
            return F.normalize(self.prototypes + text_delta, dim=-1)
        tangent = self._scale(self.log_text_scale) * self.project_text(self.text_hidden).float()
        if text_delta is not None:
            tangent = tangent + text_delta
        return self._to_ball(tangent)

    def image_embeddings(self, features: torch.Tensor) -> torch.Tensor:
        """[B, D] image embeddings in head space from raw encoder features."""
        if not self.head.hyperbolic:
            return F.normalize(features, dim=-1)
        return self._to_ball(self._scale(self.log_image_scale) * features.float())

    def _to_ball(self, tangent: torch.Tensor) -> torch.Tensor:
        curvature = self.curvature
        return geometry.project(
            geometry.exp0(tangent, curvature), curvature, eps=self.head.boundary_eps
        )

    def logits_between(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """[B, N] logits of head-space image embeddings against head-space node embeddings."""
        if not self.head.hyperbolic:
            return self.logit_scale * image @ text.t().to(image.dtype)
        distance = geometry.pairwise_distance(image, text, self.curvature)
        return -distance / self.head.temperature

    def forward(
        self,
        images: torch.Tensor,
        *,
        text_delta: torch.Tensor | None = None,
        return_embeddings: bool = False,
        separate_batches: int = 1,
    ) -> torch.Tensor | HeadOutput:
        """Logits [B, num_nodes] over every node slot (see :class:`HeadLayout`).

        With ``return_embeddings``, a :class:`HeadOutput` with the embeddings the losses need
        (one forward, so a DDP wrapper sees every trained parameter used). ``images`` may stack
        ``separate_batches`` equal batches (clean and adversarial, say): each is encoded on its
        own, so batch-norm statistics never mix them, still in one call.
        """
        if separate_batches > 1:
            features = torch.cat(
                [self.encode_images(part) for part in images.chunk(separate_batches)]
            )
        else:
            features = self.encode_images(images)
        image = self.image_embeddings(features)
        text = self.text_embeddings(text_delta)
        logits = self.logits_between(image, text)
        if not return_embeddings:
            return logits
        temperature = self.head.temperature if self.head.hyperbolic else 1 / self.logit_scale
        return HeadOutput(
            image=image,
            text=text,
            logits=logits,
            features=features,
            curvature=self.curvature,
            temperature=temperature,
            geometry=self.head.geometry,
        )

    def level_logits(self, logits: torch.Tensor, tree: str, level: int) -> torch.Tensor:
        return logits[:, self.layout.slice_of(tree, level)]

    # -- what fine-tuning trains -----------------------------------------------------------

    def freeze_for_finetuning(self) -> list[nn.Parameter]:
        """Freeze all but the image encoder (+ ``P`` and head scales when set); return those.

        The text transformer and the logit scale stay frozen for every method: the cached text
        outputs stay valid, and the baselines' logits keep the model's own scale.
        """
        self.requires_grad_(False)
        self.clip.visual.requires_grad_(True)
        if self.head.hyperbolic:
            if self.head.train_text_projection:
                self._projection_owner.text_projection.requires_grad_(True)
            self.log_text_scale.requires_grad_(self.head.learn_scales)
            self.log_image_scale.requires_grad_(self.head.learn_scales)
            self.log_curvature.requires_grad_(self.head.learn_curvature)
        return [parameter for parameter in self.parameters() if parameter.requires_grad]


class LevelHead(nn.Module):
    """A view of a classifier that returns one level's logits: what a level attack targets."""

    def __init__(self, classifier: ZeroShotClassifier, tree: str, level: int):
        super().__init__()
        self.classifier = classifier
        self.tree, self.level = tree, level
        self.node_slice = classifier.layout.slice_of(tree, level)
        self.train(classifier.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)[:, self.node_slice]
