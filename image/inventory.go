package image

// ImgVersion is inventory_entry.img_version of the sets this codec handles: CRIU's
// CRTOOLS_IMAGES_V1_1, with which every image but inventory.img's own service images starts
// with the IMG_COMMON magic. CRIU has written it since 1.x; older sets are not supported.
const ImgVersion = 2
