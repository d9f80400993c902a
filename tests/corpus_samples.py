"""Hand-written miniature corpora in their real layouts and naming, for the prep tests.

Each ``make_<corpus>(root)`` writes a handful of correctly named files (counted by hand in the tests), a
few broken ones, and returns the root. The wavs are silence: prep reads names and headers, not sounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

LFS_STUB = "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 51200\n"


def write_wav(path: Path, seconds: float = 0.25, rate: int = 16000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (int(seconds * rate), channels) if channels > 1 else int(seconds * rate)
    sf.write(str(path), np.zeros(shape, dtype=np.int16), rate, subtype="PCM_16")
    return path


# EmoDB: 8 good names (hap, ang, neu, neu, sad, bor, dis, fea) and 5 bad files.
EMODB_GOOD = ("03a01Fa", "03a02Wb", "08a01Na", "03a01Nc", "16b03Tb", "09a05Lc", "10b09Ea", "11a07Ab")
EMODB_BAD = {
    "03a01Xa": "unknown emotion letter X",
    "05a01Fa": "unknown speaker 05",
    "03z99Fa": "unknown text code z99",
    "notes": "file name is not EmoDB's",
}


def make_emodb(root: Path) -> Path:
    for stem in (*EMODB_GOOD, *EMODB_BAD):
        write_wav(root / "wav" / f"{stem}.wav")
    (root / "wav" / "12a01Fa.wav").write_bytes(b"")  # damaged: reported as an empty wav
    (root / "wav" / "._03a01Fa.wav").write_bytes(b"\x00\x05\x16\x07 resource fork")  # ignored
    (root / "lablaut").mkdir()
    (root / "lablaut" / "03a01Fa.lab").write_text("phonetic labels, not read\n")
    return root


# RAVDESS: Actor folder -> file names; the comments say what prep must make of each.
RAVDESS_FILES = {
    "Actor_01": (
        "03-01-01-01-01-01-01.wav",  # neutral, male: kept
        "03-01-02-01-01-01-01.wav",  # calm: its own code, filtered by the default classes
        "03-01-05-02-02-01-01.wav",  # angry, strong, statement 02: kept
    ),
    "Actor_02": (
        "03-01-03-01-01-02-02.wav",  # happy, female: kept
        "03-01-04-02-01-01-02.wav",  # sad: kept
        "03-02-03-01-01-01-02.wav",  # song, happy: filtered unless include_song
        "02-01-03-01-01-01-02.mp4",  # video-only clip: ignored (not a wav)
    ),
    "Actor_12": (
        "03-01-05-01-02-01-12.wav",  # angry, actor 12 = female: kept
        "03-01-05-01-02-01-11.wav",  # actor 11 in Actor_12: reported
        "03-01-09-01-01-01-12.wav",  # emotion 09: reported
        "01-01-03-01-01-01-12.wav",  # audio-visual modality: filtered
    ),
}


def make_ravdess(root: Path) -> Path:
    for actor, names in RAVDESS_FILES.items():
        for name in names:
            if name.endswith(".wav"):
                write_wav(root / actor / name, rate=48000)
            else:
                (root / actor).mkdir(parents=True, exist_ok=True)
                (root / actor / name).write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return root


CREMAD_GOOD = (
    "1001_DFA_ANG_XX",
    "1001_IEO_HAP_HI",
    "1002_TIE_NEU_XX",
    "1002_MTI_SAD_LO",
    "1003_ITS_DIS_MD",
    "1091_WSI_FEA_XX",
)
CREMAD_BAD = {
    "1001_XYZ_ANG_XX": "unknown sentence code XYZ",
    "1001_DFA_JOY_XX": "unknown emotion JOY",
    "1001_DFA_ANG": "file name is not CREMA-D's",
}
VOTES_HEADER = (
    '"","A","D","F","H","N","S","fileName","numResponses","agreement","emoVote","meanEmoResp",'
    '"meanAngerResp","meanDisgustResp","meanFearResp","meanHappyResp","meanNeutralResp","meanSadResp",'
    '"medianEmoResp","meanEmoRespNorm","meanAngerRespNorm","meanDisgustRespNorm","meanFearRespNorm",'
    '"meanHappyRespNorm","meanNeutralRespNorm","meanSadRespNorm","medianEmoRespNorm"'
)
# (row index = 100000 * queryType + clipNum, A D F H N S counts, clip); queryType 1 voice, 2 face, 3 both.
VOTE_ROWS = (
    (100001, (5, 1, 0, 0, 2, 0), "1001_DFA_ANG_XX"),
    (200001, (0, 0, 0, 0, 9, 0), "1001_DFA_ANG_XX"),
    (300001, (9, 0, 0, 0, 0, 0), "1001_DFA_ANG_XX"),
    (100002, (0, 0, 0, 3, 2, 0), "1001_IEO_HAP_HI"),
    (100004, (0, 0, 0, 0, 1, 4), "1002_MTI_SAD_LO"),
    (200004, (7, 0, 0, 0, 0, 0), "1002_MTI_SAD_LO"),
)


def write_votes(path: Path, rows=VOTE_ROWS) -> None:
    lines = [VOTES_HEADER]
    for index, counts, clip in rows:
        n = sum(counts)
        tail = ",".join(["50"] * 16)
        lines.append(f'"{index}",{",".join(map(str, counts))},"{clip}",{n},{max(counts) / n},"A",{tail}')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_cremad(root: Path) -> Path:
    for stem in (*CREMAD_GOOD, *CREMAD_BAD):
        write_wav(root / "AudioWAV" / f"{stem}.wav")
    (root / "AudioWAV" / "1002_IEO_ANG_HI.wav").write_text(LFS_STUB)  # a clone without git-lfs
    (root / "VideoDemographics.csv").write_text(
        '"ActorID","Age","Sex","Race","Ethnicity"\n'
        '1001,51,"Male","Caucasian","Not Hispanic"\n'
        '1002,21,"Female","Caucasian","Not Hispanic"\n'
        '1003,21,"Female","Caucasian","Not Hispanic"\n'
    )
    write_votes(root / "processedResults" / "tabulatedVotes.csv")
    return root


MSP_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
MSP_ROWS = (
    "MSP-PODCAST_0001_0008.wav,N,3.2,4.0,3.8,127,Female,Train",  # line 2: kept
    "MSP-PODCAST_0001_0019.wav,H,4.6,5.8,4.2,127,Female,Train",  # 3: kept
    "MSP-PODCAST_0002_0003.wav,A,5.8,2.0,5.4,1,Male,Development",  # 4: kept
    "MSP-PODCAST_0002_0007.wav,S,2.5,2.2,3.0,Unknown,Unknown,Test1",  # 5: kept, own speaker
    "MSP-PODCAST_0003_0001.wav,C,4.0,3.0,4.4,35,Male,Test2",  # 6: contempt, filtered
    "MSP-PODCAST_0003_0002.wav,X,4.0,4.0,4.0,35,Male,Train",  # 7: no agreement, filtered
    "MSP-PODCAST_0004_0001.wav,,,,,Unknown,Unknown,Test3",  # 8: labels withheld, filtered
    "MSP-PODCAST_0004_0002.wav,Q,4.0,4.0,4.0,40,Male,Train",  # 9: unknown EmoClass
    "MSP-PODCAST_0004_0003.wav,N,4.0,4.0,4.0,abc,Male,Train",  # 10: bad SpkrID
    "MSP-PODCAST_0001_0008.wav,N,3.2,4.0,3.8,127,Female,Train",  # 11: listed again
    "MSP-PODCAST_0005_0001.wav,H,4.0,4.0,4.0,50,Female,Test1",  # 12: no wav
)


def make_msppodcast(root: Path) -> Path:
    for row in MSP_ROWS:
        name = row.split(",", 1)[0]
        if name != "MSP-PODCAST_0005_0001.wav":
            write_wav(root / "Audios" / name)
    (root / "Labels").mkdir(parents=True)
    (root / "Labels" / "labels_consensus.csv").write_text("\n".join((MSP_HEADER, *MSP_ROWS)) + "\n")
    return root
