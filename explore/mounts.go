package explore

import (
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"

	"github.com/imgtool/imgtool/image"
	"github.com/imgtool/imgtool/imgset"
)

// Mount is one mount of a mount namespace of the set (mountpoints-N.img).
type Mount struct {
	Namespace  string `json:"namespace"` // the image it is listed in: mountpoints-N.img
	ID         uint32 `json:"mnt_id"`
	Parent     uint32 `json:"parent_mnt_id"`
	FSType     string `json:"fstype"` // proc, tmpfs, overlay, ...; the fsname of an "auto" one
	Source     string `json:"source"`
	Mountpoint string `json:"mountpoint"`
	Root       string `json:"root"`
	Options    string `json:"options"`
	External   bool   `json:"external,omitempty"` // a bind mount from outside, given at restore
}

// Mounts returns the mounts of each mountpoints-N.img of the set, in name order and
// in the order CRIU lists them.
func Mounts(set *imgset.Set) ([]Mount, error) {
	l := newLoader(set)
	out := []Mount{}
	for _, name := range set.Names() {
		if k := image.KindByFileName(name); k == nil || k.Name != "MNTS" {
			continue
		}
		img, err := l.image(name, "MNTS")
		if err != nil {
			return nil, err
		}
		list, err := entries[*mnt.MntEntry](img, name)
		if err != nil {
			return nil, err
		}
		for _, e := range list {
			fs := strings.ToLower(mnt.Fstype(e.GetFstype()).String())
			if e.GetFsname() != "" {
				fs = e.GetFsname()
			}
			out = append(out, Mount{Namespace: name, ID: e.GetMntId(), Parent: e.GetParentMntId(), FSType: fs,
				Source: e.GetSource(), Mountpoint: e.GetMountpoint(), Root: e.GetRoot(), Options: e.GetOptions(),
				External: e.GetExtMount() || e.GetExtKey() != ""})
		}
	}
	return out, nil
}
