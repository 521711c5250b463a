package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"

	"github.com/imgtool/imgtool/image"
)

// Names of the metadata members the engines write beside checkpoint/.
const (
	ConfigDump    = "config.dump"
	SpecDump      = "spec.dump"
	StatsDump     = "stats-dump"
	NetworkStatus = "network.status"
	RootfsDiff    = "rootfs-diff.tar"
	DevShm        = "devshm-checkpoint.tar"
)

// Info is what an archive says about the container it checkpointed, as
// checkpointctl show prints it, and the sizes of its parts.
type Info struct {
	Name         string    `json:"name"`
	ID           string    `json:"id"`
	Image        string    `json:"image"`
	ImageID      string    `json:"image_id,omitempty"`
	Runtime      string    `json:"runtime"`
	Engine       string    `json:"engine"` // Podman, CRI-O, containerd, or "" when unknown
	Namespace    string    `json:"namespace,omitempty"`
	Pod          string    `json:"pod,omitempty"`
	IP           string    `json:"ip,omitempty"`
	Created      time.Time `json:"created"`
	Checkpointed time.Time `json:"checkpointed"`
	// CheckpointedFrom says where Checkpointed comes from: "config.dump", or
	// "mtime of checkpoint/" when the engine did not record it (Podman 4.3).
	CheckpointedFrom string      `json:"checkpointed_from"`
	Command          []string    `json:"command,omitempty"` // the OCI spec's process args
	Compression      Compression `json:"compression"`
	CheckpointSize   int64       `json:"checkpoint_size"` // bytes of checkpoint/
	PagesSize        int64       `json:"pages_size"`      // of which pages-*.img
	RootfsDiffSize   int64       `json:"rootfs_diff_size"`
	DevShmSize       int64       `json:"devshm_size"`
	Stats            *Stats      `json:"stats,omitempty"`
	// Problems lists metadata that could not be read (each names its member);
	// the rest of Info is still filled.
	Problems []string `json:"problems"`
}

// Stats is CRIU's dump statistics (stats-dump), times in microseconds.
type Stats struct {
	FreezingTime uint32 `json:"freezing_time_us"`
	FrozenTime   uint32 `json:"frozen_time_us"`
	MemdumpTime  uint32 `json:"memdump_time_us"`
	MemwriteTime uint32 `json:"memwrite_time_us"`
	PagesScanned uint64 `json:"pages_scanned"`
	PagesWritten uint64 `json:"pages_written"`
}

// configDump is the part of config.dump (Podman's and CRI-O's container config)
// that is shown.
type configDump struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	RootfsImage     string    `json:"rootfsImage"`
	RootfsImageID   string    `json:"rootfsImageID"`
	RootfsImageRef  string    `json:"rootfsImageRef"`
	RootfsImageName string    `json:"rootfsImageName"`
	Runtime         string    `json:"runtime"`
	OCIRuntime      string    `json:"ociRuntime"`
	CreatedTime     time.Time `json:"createdTime"`
	CheckpointedAt  time.Time `json:"checkpointedTime"`
}

// specDump is the part of spec.dump (the OCI runtime spec) that is shown.
type specDump struct {
	Process struct {
		Args []string `json:"args"`
	} `json:"process"`
	Annotations map[string]string `json:"annotations"`
}

// Info reads the archive's metadata. A member that is missing or unreadable is
// listed in Info.Problems; only an archive without config.dump nor spec.dump is an
// error (it is not a container checkpoint).
func (a *Archive) Info() (*Info, error) {
	info := &Info{Compression: a.compression, Problems: []string{}}
	info.CheckpointSize = a.SizeUnder(CheckpointDir)
	for _, m := range a.members {
		if m.Type == "file" && strings.HasPrefix(m.Name, CheckpointDir+"/pages-") {
			info.PagesSize += m.Size
		}
	}
	info.RootfsDiffSize, _ = a.Size(RootfsDiff)
	info.DevShmSize, _ = a.Size(DevShm)

	var cfg configDump
	var spec specDump
	cfgErr := a.readJSON(ConfigDump, &cfg)
	specErr := a.readJSON(SpecDump, &spec)
	if errors.Is(cfgErr, os.ErrNotExist) && errors.Is(specErr, os.ErrNotExist) {
		return nil, fmt.Errorf("archive %s: neither %s nor %s: not a container checkpoint", a.path, ConfigDump, SpecDump)
	}
	for _, err := range []error{cfgErr, specErr} {
		if err != nil {
			info.Problems = append(info.Problems, err.Error())
		}
	}
	info.ID, info.Name = cfg.ID, cfg.Name
	info.Image = firstOf(cfg.RootfsImageName, cfg.RootfsImageRef, cfg.RootfsImage)
	info.ImageID = firstOf(cfg.RootfsImageID, cfg.RootfsImage)
	info.Runtime = firstOf(cfg.Runtime, cfg.OCIRuntime)
	info.Created = cfg.CreatedTime.UTC()
	info.Command = spec.Process.Args
	ann := spec.Annotations
	switch ann["io.container.manager"] {
	case "libpod":
		info.Engine = "Podman"
	case "cri-o":
		info.Engine = "CRI-O"
		var md struct {
			Name string `json:"name"`
		}
		if json.Unmarshal([]byte(ann["io.kubernetes.cri-o.Metadata"]), &md) == nil && md.Name != "" {
			info.Name = md.Name
		}
		info.IP = ann["io.kubernetes.cri-o.IP.0"]
		info.Namespace, info.Pod = ann["io.kubernetes.pod.namespace"], ann["io.kubernetes.pod.name"]
		if t, err := time.Parse(time.RFC3339Nano, ann["io.kubernetes.cri-o.Created"]); err == nil && info.Created.IsZero() {
			info.Created = t.UTC()
		}
	default:
		if n := ann["io.kubernetes.cri.container-name"]; n != "" {
			info.Engine = "containerd"
			info.Name = n
			info.Namespace, info.Pod = ann["io.kubernetes.cri.sandbox-namespace"], ann["io.kubernetes.cri.sandbox-name"]
		}
	}
	if !cfg.CheckpointedAt.IsZero() {
		info.Checkpointed, info.CheckpointedFrom = cfg.CheckpointedAt.UTC(), ConfigDump
	} else {
		for _, m := range a.members {
			if m.Name == CheckpointDir || strings.HasPrefix(m.Name, CheckpointDir+"/") {
				if m.ModTime.After(info.Checkpointed) {
					info.Checkpointed = m.ModTime
				}
			}
		}
		if !info.Checkpointed.IsZero() {
			info.CheckpointedFrom = "mtime of " + CheckpointDir + "/"
		}
	}
	if st, err := a.stats(); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			info.Problems = append(info.Problems, err.Error())
		}
	} else {
		info.Stats = st
	}
	sort.Strings(info.Problems)
	return info, nil
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (a *Archive) readJSON(name string, v any) error {
	data, err := a.ReadFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// stats reads stats-dump, a CRIU STATS image.
func (a *Archive) stats() (*Stats, error) {
	data, err := a.ReadFile(StatsDump)
	if err != nil {
		return nil, err
	}
	img, err := image.ReadImage(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", StatsDump, err)
	}
	if len(img.Entries) == 0 {
		return nil, fmt.Errorf("%s: no entries", StatsDump)
	}
	e, ok := img.Entries[0].Msg.(*stats.StatsEntry)
	if !ok || e.GetDump() == nil {
		return nil, fmt.Errorf("%s: not dump statistics", StatsDump)
	}
	d := e.GetDump()
	return &Stats{FreezingTime: d.GetFreezingTime(), FrozenTime: d.GetFrozenTime(), MemdumpTime: d.GetMemdumpTime(),
		MemwriteTime: d.GetMemwriteTime(), PagesScanned: d.GetPagesScanned(), PagesWritten: d.GetPagesWritten()}, nil
}
